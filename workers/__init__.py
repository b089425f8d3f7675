"""Celery app, thin tasks and the job runner that executes audits outside the gateway."""
