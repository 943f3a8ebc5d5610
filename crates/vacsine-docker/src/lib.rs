//! vacsine-docker
