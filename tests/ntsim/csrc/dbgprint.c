/* DbgPrint and DbgPrintEx are C-variadic, which stable Rust cannot define: they are
 * formatted here with the C library and handed to ntsim as one string. */
#include <stdarg.h>
#include <stdio.h>

extern void ntsim_debug_output(unsigned int component, unsigned int level, const char *text);

static void emit(unsigned int component, unsigned int level, const char *format, va_list args) {
    char line[1024];
    vsnprintf(line, sizeof line, format, args);
    ntsim_debug_output(component, level, line);
}

unsigned int DbgPrint(const char *format, ...) {
    va_list args;
    va_start(args, format);
    emit(0xFFFFFFFFu, 0, format, args);
    va_end(args);
    return 0;
}

unsigned int DbgPrintEx(unsigned int component, unsigned int level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    emit(component, level, format, args);
    va_end(args);
    return 0;
}
