"""Measuring models the way the papers did: dataset evaluation, the t sweep, and the report page."""
