"""OpenHands' Stop Conversation route on AWS, and the agent-worker side that carries a stop out.

The folders say what the system is, lowest layer first (each imports only the ones above it
in this list: README.md, tests/test_dependencies.py):

- ``constants``: names and limits more than one layer uses;
- ``domain``: the contract (models, the cancel message, ``close_session``, the ports), no
  AWS in it; ``settings``: the stack's resources, from the environment;
- ``aws``: adapters that speak DynamoDB, SQS and Secrets Manager for the domain;
- ``edge``: the HTTP face (FastAPI app, session-key check); ``worker``: what an agent host
  embeds to stop its loops when a cancel arrives;
- ``wiring``: builds the stop service from its settings;
- ``lambda_entry``: the Lambda handler; ``integrations``: the OpenHands agent hosts.
"""
