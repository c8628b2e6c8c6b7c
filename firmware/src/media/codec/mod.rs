//! Codec glue: H.264 (openh264) and Opus, encoding into and decoding from caller-owned buffers.
