"""Policy training: gait-search specialists and the behaviour-cloned generalist."""
