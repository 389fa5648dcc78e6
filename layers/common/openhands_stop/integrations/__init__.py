"""Agent hosts this stack plugs into, each an optional extra (nothing here is in the layer).

``openhands_stop.integrations.openhands``: OpenHands 0.53's server, through its
``CONVERSATION_MANAGER_CLASS`` extension point (``pip install "openhands-stop[openhands]"``).
"""
