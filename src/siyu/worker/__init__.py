"""The job runner: claims outbox jobs, runs their handlers, retries with backoff, fires schedules."""
