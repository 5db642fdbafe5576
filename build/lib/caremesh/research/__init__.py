"""Research streams: the study topic's records, export."""
