"""The stages' logic, kept apart from Faust so it can be tested without a broker.

Each module here is a pure state machine: given the stored state and one event, it
returns the new state and the records to emit. The Faust apps (`pipelines.orders`,
`pipelines.notifications`, `pipelines.analytics`) only move bytes between topics, tables
and these functions.
"""
