mod results;
mod ssg;
mod tables;
mod tailoring;
