"""Using a homellm gateway from another machine: profiles, pairing, ping, chat and the bridge."""
