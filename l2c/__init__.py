"""l2c: Dataverse lead-to-cash connector and process-mining ETL."""

__version__ = "0.1.0"
