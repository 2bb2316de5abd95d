"""HTTP plumbing shared by every domain's endpoints: dependencies, problem responses, middleware."""
