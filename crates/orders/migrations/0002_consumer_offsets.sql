-- Positions and partition leases of consumers of brokers without consumer groups (Kafka).
CREATE TABLE consumer_offsets (
    group_name  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint,
    owner       text,
    lease_until timestamptz,
    PRIMARY KEY (group_name, topic, partition)
);
