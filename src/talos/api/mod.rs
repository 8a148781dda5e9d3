//! Talos gRPC API client (apid, port 50000): hand-written prost messages, maintenance and mTLS modes, bring-up stages.
