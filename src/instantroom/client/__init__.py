"""Client side: the asyncio library that talks to any relay."""
