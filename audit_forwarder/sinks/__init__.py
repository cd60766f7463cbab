"""Sinks: each turns shipper records into one destination's wire format and confirms delivery."""
