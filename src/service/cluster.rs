//! Scale-out through the control topic: shared knob versions, the audit
//! mirror and controller leadership. The implementation is a Kafka client
//! and lives in [`crate::kafka::cluster`]; this module keeps the service's
//! path to it (`service::cluster::read_cluster_audit`, …).

pub use crate::kafka::cluster::{
    default_instance_id, read_cluster_audit, Cluster, ClusterAuditLine, SnapshotRecord,
    CATCH_UP_TIMEOUT,
};
