//! vacsine-enforce
