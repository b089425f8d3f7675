"""Demo assets: a real dataset and real reference/candidate models, built offline from packages."""
