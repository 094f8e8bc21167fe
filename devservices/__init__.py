"""Real services on loopback for the tests and benchmarks: Apache Kafka (KRaft, jars from Maven
Central), Tansu as the fallback broker where no JDK is present, PostgreSQL and Redis."""
