//! A guide (written below).
