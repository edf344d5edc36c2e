#!/bin/sh
# Prints the Secrets StreamSpace needs, with fresh random values, as YAML for
#
#     deploy/kubernetes/create-secrets.sh | kubectl create -f -
#
# `create`, not `apply`: it refuses to replace Secrets that exist (PostgreSQL keeps the
# password it was initialised with). Nothing here is stored anywhere but in the cluster.
#
#   streamspace-postgres  POSTGRES_PASSWORD, DATABASE_URL (the API's, with that password)
#   streamspace-api       INTERNAL_SECRET (replica-to-replica tunnel relays),
#                         AGENT_BOOTSTRAP_KEY (registers agents), STREAMSPACE_ADMIN_PASSWORD
#
# The agent's Secret (streamspace-agent, AGENT_API_KEY) is made after the agent is
# registered: docs/kubernetes.md, "Register the agent".
set -eu
NAMESPACE="${NAMESPACE:-streamspace}"

random() { # $1 bytes of /dev/urandom as hex
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

PG_PASSWORD=$(random 24)
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: streamspace-postgres
  namespace: $NAMESPACE
type: Opaque
stringData:
  POSTGRES_PASSWORD: "$PG_PASSWORD"
  DATABASE_URL: "postgresql://streamspace:$PG_PASSWORD@streamspace-postgres:5432/streamspace"
---
apiVersion: v1
kind: Secret
metadata:
  name: streamspace-api
  namespace: $NAMESPACE
type: Opaque
stringData:
  INTERNAL_SECRET: "$(random 32)"
  AGENT_BOOTSTRAP_KEY: "$(random 32)"
  STREAMSPACE_ADMIN_PASSWORD: "$(random 16)"
YAML
