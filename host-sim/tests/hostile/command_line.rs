//! Hostile command lines against `itera-sim`: absurd sizes and flags.
