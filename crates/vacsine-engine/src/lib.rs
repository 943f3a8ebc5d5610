//! vacsine-engine
