# The ebzip HDF5 filter plugin (csrc/h5/ebzip_h5filter.cpp), built only where
# HDF5's C headers are found (Debian: libhdf5-dev); otherwise skipped with a
# message, and ebzip.h5 / the CLI work through h5py's direct chunk I/O.
# Include from the top-level CMakeLists.txt after the ebzip_cpu target:
#     include(csrc/h5/plugin.cmake)
# Turn it off with -DEBZIP_H5PLUGIN=OFF (pip: --config-settings=cmake.define.EBZIP_H5PLUGIN=OFF).
option(EBZIP_H5PLUGIN "Build the HDF5 filter plugin when HDF5 headers are found" ON)

if(EBZIP_H5PLUGIN)
  find_path(EBZIP_HDF5_INCLUDE_DIR H5PLextern.h
            HINTS ENV HDF5_DIR ENV HDF5_ROOT
            PATH_SUFFIXES include hdf5/serial include/hdf5/serial hdf5)
endif()

if(EBZIP_H5PLUGIN AND EBZIP_HDF5_INCLUDE_DIR)
  # The filter id has one home, python/ebzip/h5.py; read it from there.
  file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../../python/ebzip/h5.py" _ebzip_fid_line REGEX "^FILTER_ID = [0-9]+")
  string(REGEX REPLACE "^FILTER_ID = ([0-9]+).*$" "\\1" EBZIP_H5_FILTER_ID "${_ebzip_fid_line}")
  if(NOT EBZIP_H5_FILTER_ID MATCHES "^[0-9]+$")
    message(FATAL_ERROR "ebzip: cannot read FILTER_ID from python/ebzip/h5.py")
  endif()
  add_library(ebzip_h5filter MODULE "${CMAKE_CURRENT_LIST_DIR}/ebzip_h5filter.cpp")
  target_include_directories(ebzip_h5filter PRIVATE "${EBZIP_HDF5_INCLUDE_DIR}")
  target_compile_definitions(ebzip_h5filter PRIVATE EBZIP_H5_FILTER_ID=${EBZIP_H5_FILTER_ID})
  # No libhdf5 link: the plugin calls into whichever HDF5 loaded it (see the source).
  target_link_libraries(ebzip_h5filter PRIVATE ebzip_cpu ${CMAKE_DL_LIBS})
  target_compile_options(ebzip_h5filter PRIVATE -ffp-contract=off)
  set_target_properties(ebzip_h5filter PROPERTIES PREFIX "lib" OUTPUT_NAME "ebzip_h5filter"
                        CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
    # keep the bundled codec and zstd private, so they never clash with ebzip._core's copy
    target_link_options(ebzip_h5filter PRIVATE "LINKER:--exclude-libs,ALL")
  endif()
  install(TARGETS ebzip_h5filter LIBRARY DESTINATION ebzip/h5plugin)
  message(STATUS "ebzip: HDF5 filter plugin enabled (filter id ${EBZIP_H5_FILTER_ID}, headers ${EBZIP_HDF5_INCLUDE_DIR})")
else()
  message(STATUS "ebzip: HDF5 headers not found (or EBZIP_H5PLUGIN=OFF): HDF5 filter plugin skipped")
endif()
