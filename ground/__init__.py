"""The ground floor: what every layer imports and which imports nothing of the project (errors, file primitives)."""
