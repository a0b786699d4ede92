// Force-included first into every C++ file of a TSan build (sanitizers.cmake).
//
// protobuf 3.21's map_field.h gives MapFieldBase two extra members when it sees
// __SANITIZE_THREAD__ (its own const/mutable access checker). Debian's
// libprotobuf is built without TSan, so an instrumented object and the library
// would disagree on the class layout, and the library's text-format parser
// crashes on the first map field it fills (labels in a pods file). Including
// map_field.h here, with the macro hidden, fixes the layout the library has;
// its include guard keeps later includes from defining it again. Data races
// on our messages are still found: TSan instruments every access, the checker
// only made some of them louder.
#pragma once

#pragma push_macro("__SANITIZE_THREAD__")
#undef __SANITIZE_THREAD__
#include <google/protobuf/map_field.h>
#pragma pop_macro("__SANITIZE_THREAD__")
