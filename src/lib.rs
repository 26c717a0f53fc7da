//! drover
