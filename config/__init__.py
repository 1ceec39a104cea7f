"""Typed settings and the declarative TOML files (tables, activities) that drive the generic engines."""
