"""Sessions: the lifecycle requests of users and the launch writer that places them on agents."""
