"""The shipper: one durable cursor per sink over the journal, batching, retries, quarantine."""
