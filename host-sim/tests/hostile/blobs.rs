//! Hostile blobs (`.itb`) against `Blob::parse`, through `itera-sim` and `itera-pack inspect`.
