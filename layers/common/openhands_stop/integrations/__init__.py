"""Agent hosts this stack plugs into, each an optional extra (nothing here is in the layer).

``openhands_stop.integrations.openhands``: OpenHands 0.53's server, through its
``CONVERSATION_MANAGER_CLASS`` extension point (``pip install "openhands-stop[openhands]"``).
``openhands_stop.integrations.agent_server``: OpenHands 1.x's agent-server, through a sidecar
process beside it that uses its REST API (``pip install "openhands-stop[agent-server]"``).
"""
