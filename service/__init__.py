"""The trustdiff HTTP gateway: routes, schemas, auth, settings, ORM models and DB sessions."""
