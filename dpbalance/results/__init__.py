"""Result schema, report and plots."""

from .schema import SCHEMA_VERSION, TABLE_FIELDS, Result, Series, build_result, read_results, write_json

__all__ = ["SCHEMA_VERSION", "TABLE_FIELDS", "Result", "Series", "build_result", "read_results", "write_json"]
