"""Plain consumers: tail, replay, DLQ inspection and lag reports."""
