"""HTTP plumbing shared by every route: request size limit and the one error shape."""
