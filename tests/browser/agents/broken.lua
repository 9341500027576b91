return {execute = function( end}
