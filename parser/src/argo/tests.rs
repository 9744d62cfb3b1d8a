//! Tests of the Argo front end on small hand-written workflows.
