/* Fixture FetchContent dependency (see ../CMakeLists.txt). */
#ifndef ISAHELPER_H
#define ISAHELPER_H
#define ISAHELPER_VERSION "1.0"
/* The first multiplier of the AVX-512 kernel's masked lanes. */
#define ISAHELPER_FIRST_LANE 1
#endif
