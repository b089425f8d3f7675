"""HTTP routes, one module per resource, and the dependencies they share."""
