"""Prompts: templates and structured forms, the built-in library, enhancement, batch expansion.

Plain values in, plain values out: nothing here touches the database or the settings object."""
