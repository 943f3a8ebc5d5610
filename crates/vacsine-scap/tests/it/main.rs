mod ssg;
mod tables;
