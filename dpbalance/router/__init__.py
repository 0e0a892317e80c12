"""The live side: OpenAI-compatible router, barrier-synchronized engine emulator, load generator."""
