"""Unique names for queues and exchanges, so tests never collide on a shared broker."""
import uuid


def unique_name(what):
    """A queue or exchange name no other test (or test run) uses."""
    return f"ferry.test.{what}.{uuid.uuid4().hex[:16]}"
