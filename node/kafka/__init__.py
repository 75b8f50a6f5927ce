"""The imperative shell around Kafka: consume, produce, commit. aiokafka is imported only here."""
