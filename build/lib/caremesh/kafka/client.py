"""The Kafka client libraries' names the rest of caremesh uses, imported here and nowhere else.

confluent-kafka (librdkafka) is the stream runtime's and the connectors' producer and consumer;
aiokafka is the asyncio consumer of the HTTP services that follow topics (the consent API, the
inbox, FHIR delivery). Every other module imports these names from `caremesh.kafka.client`, so a
change of client library or version is made under `caremesh.kafka` only (`make check` enforces it).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

__all__ = [
    "OFFSET_BEGINNING",
    "AIOKafkaConsumer",
    "AclBinding",
    "AclBindingFilter",
    "AclOperation",
    "AclPermissionType",
    "AdminClient",
    "AioKafkaError",
    "AioTopicPartition",
    "AlterConfigOpType",
    "ConfigEntry",
    "ConfigResource",
    "Consumer",
    "ConsumerRecord",
    "KafkaError",
    "KafkaException",
    "Message",
    "NewPartitions",
    "NewTopic",
    "Producer",
    "ResourcePatternType",
    "ResourceType",
    "ScramCredentialInfo",
    "ScramMechanism",
    "TopicPartition",
    "UserScramCredentialDeletion",
    "UserScramCredentialUpsertion",
]
