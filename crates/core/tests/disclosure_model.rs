//! The reference model of issue 12 (who may learn what), compiled here from the end-to-end tests'
//! crate, so core's pure consent and disclosure functions can be held to the same model the
//! gateway is (its own unit tests run here too).

#[path = "../../../tests/src/model.rs"]
#[allow(dead_code)]
mod model;
