"""Host side of talking to devices: addresses, inventory, connections, the agent client."""
