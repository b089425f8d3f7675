"""The trustdiff demo: real models and data built offline from packages, audited over HTTP.

A program built on the engine (`trustdiff`) and the service, run from a checkout with
`python -m demo.build` and `python -m demo.run` (`make demo`); not part of the installed
package.
"""
