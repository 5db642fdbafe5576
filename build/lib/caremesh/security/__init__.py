"""Kafka security of caremesh: principals, ACLs, client credentials, secured broker, records.

`principals` (who connects and what each needs) → `acl` (deny-by-default ALLOW rules) →
`apply` (AdminClient `create_acls`); `clients` turns `KafkaSettings` into each client library's
options; `broker` renders the secured local broker; `strimzi` and `gdpr` render the same
catalogue as Kubernetes resources and as the GDPR Art. 30 record of processing.
"""
