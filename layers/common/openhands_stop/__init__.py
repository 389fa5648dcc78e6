"""OpenHands' Stop Conversation route on AWS, and the agent-worker side that carries a stop out.

The folders say what the system is:

- ``domain``: the contract (models, the cancel message, ``close_session``), no AWS in it;
- ``aws``: adapters that speak DynamoDB, SQS and Secrets Manager for the domain;
- ``edge``: the HTTP face (FastAPI app, session-key check, Lambda entry);
- ``worker``: what an agent host embeds to stop its loops when a cancel arrives.
"""
