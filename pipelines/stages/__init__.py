"""The stages' logic, kept apart from Faust so it can be tested without a broker.

Each module here is a pure state machine or a pure helper of one (saga, stock, notify,
windows, partialbook, homing): given the stored state and one event, it returns the new
state and the records to emit. Nothing here imports Faust, mode, aiokafka,
confluent-kafka, aiohttp or `pipelines.runtime`. The Faust apps (`pipelines.orders`,
`pipelines.notifications`, `pipelines.analytics`) and `pipelines.runtime` move bytes
between topics, tables and these functions.
"""
