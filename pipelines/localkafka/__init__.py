"""A real Apache Kafka (KRaft) on this machine, from the jars pinned in deploy/local/pom.xml."""

from pipelines.localkafka.cluster import ClusterState, LocalCluster, UpResult, free_base_port

__all__ = ["ClusterState", "LocalCluster", "UpResult", "free_base_port"]
