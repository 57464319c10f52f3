/* version: pinmeter's version, as `pinmeter --version` prints it and
 * pinmeter_build_info carries it. */
#ifndef PINMETER_VERSION_H
#define PINMETER_VERSION_H

#define PINMETER_VERSION "0.1.0"

#endif
